"""Reports: rendering only (the cycle report, the validation report, charts); templates and CSS are files."""
