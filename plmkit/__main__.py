from plmkit.cli import main

raise SystemExit(main())
