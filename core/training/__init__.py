"""Training: the Trainer loop and the pieces it calls (state, optimizer, schedules, distributed, objectives)."""
