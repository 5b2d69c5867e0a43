from binwatch.cli import main

main()
