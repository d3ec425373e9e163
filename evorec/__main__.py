from evorec.cli import main

main()
