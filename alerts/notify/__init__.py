"""Notifications: the message model, its Chinese/English rendering and the delivery channels."""
