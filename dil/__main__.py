from dil.cli import main

raise SystemExit(main())
