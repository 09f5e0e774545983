from sysdesign.cli import main

main()
