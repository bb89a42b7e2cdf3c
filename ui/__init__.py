"""Qt dialogs of the plugin (qgis.PyQt only)."""
