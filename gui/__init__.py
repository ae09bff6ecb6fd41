"""The live monitor and procedure runner (PyQt5 + pyqtgraph)."""
