"""Provider-facing payment layer: WeChat Pay API v3, Alipay open platform, money and bills.

Pure functions and small HTTP clients only: no Flask and no database here, so that every
byte we sign, verify and parse can be tested offline with our own keys. Money is integer
fen everywhere; providers' yuan strings go through :mod:`app.payments.money`.
"""
