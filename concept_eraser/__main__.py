from concept_eraser.cli import main

raise SystemExit(main())
