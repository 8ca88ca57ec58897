"""``python -m dockkit [-n N] [--hosts ...] script.py [args]`` (SCOOP's form)."""

from dockkit.cli import python_m_main

if __name__ == "__main__":
    python_m_main()
