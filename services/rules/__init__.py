"""The rules topic: read (detector) and write (`fraudstream rules`)."""
