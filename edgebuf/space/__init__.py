"""Space: what the buffer may hold and what happens when the disk fills.

``capacity`` (cleanup after N days, the 90% rule, the overflow policy), ``reserve`` (the
ballast file given up on a full disk), ``diskfull`` (the disk-full procedure).
"""
