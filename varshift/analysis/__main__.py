from varshift.analysis.cli import main

raise SystemExit(main())
