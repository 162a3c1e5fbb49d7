from lakelet.cli import main

main()
