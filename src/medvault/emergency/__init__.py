"""Emergency access: SMART Health Links, the IPS emergency summary, break-the-glass (issue 4)."""
