from console.cli.commands import main

raise SystemExit(main())
