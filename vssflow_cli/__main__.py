from vssflow_cli.cli import main

main()
