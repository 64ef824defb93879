"""The web layer: thin views over Posta's services."""
