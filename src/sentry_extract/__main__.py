from sentry_extract.cli import main

main()
