"""Development launcher: ``make run`` starts the simulator and the three services and supervises them."""
