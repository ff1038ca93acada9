"""`python -m bench`: meshworker's figures beside what users would use instead."""
