from tickstream.cli import main

main()
