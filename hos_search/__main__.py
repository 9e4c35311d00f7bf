from hos_search.cli import main

raise SystemExit(main())
