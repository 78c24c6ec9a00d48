from concept_eraser.gui.app import main

raise SystemExit(main())
