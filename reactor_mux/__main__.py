"""``python -m reactor_mux`` runs the same command line as ``reactor-mux``."""

from reactor_mux.cli import main

raise SystemExit(main())
