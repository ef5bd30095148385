"""Web pages (Jinja2, no script): sign-in with a second factor, and the patient's access log."""
