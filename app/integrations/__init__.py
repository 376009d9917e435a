"""Adapters to outside services (WeChat's open API). Payments live in app.payments."""
