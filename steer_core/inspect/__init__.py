"""Looking inside a steered reply: its latent codes at one head and where its attention goes, from one
replay of the reply through the steering that wrote it."""
