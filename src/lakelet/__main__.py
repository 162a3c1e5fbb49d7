from lakelet.cli import main

__all__ = []

main()
