from caisey_agent.cli import main

raise SystemExit(main())
