from tickrec.cli import main

main()
