"""The job the suite submits: a SiliconCompiler 0.13 manifest and its import archive.

Both were produced once by the SiliconCompiler 0.13.0 client for a flow of tool-free
built-in steps (``import`` -> ``work0``/``work1`` -> ``merge``), so that a real server
can rebuild and run the job without any EDA tool installed.
"""
