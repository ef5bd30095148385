"""The patient community (issue 5): profiles, posts with an audience, private messages, a safe
directory, moderation. Privacy by default: every field and post starts at its narrowest audience,
and each audience gets its own output shape so that a hidden field cannot be serialised by accident.
"""
