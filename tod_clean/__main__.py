from tod_clean.cli import main

main()
