"""Emergency access: the IPS emergency summary, SMART Health Links and break-the-glass."""
