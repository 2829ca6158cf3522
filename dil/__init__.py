"""DIL: dynamic interactive labeling campaigns for 3D medical images (the application shell).

``dil_core`` holds the algorithms; ``tasks`` and ``flows`` orchestrate them with Prefect; this package holds
the command line and the campaign workspace.
"""

__version__ = "0.1.0"
