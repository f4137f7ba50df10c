"""What users build on a store: subscriptions and checkpoints, snapshots and replay
(with their reducers), and appending inputs of any length from JSON.
"""
