"""Vision side of the edge: ultralytics results as prediction records, a callback that
logs every ``predict`` call, the synthetic conveyor data and the shipped detector.

Importing this package does not import ultralytics or torch; the modules that need them
import them when called.
"""
