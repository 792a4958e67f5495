"""The HTTP routes, one router per concern; each is a few lines over serving/inference/."""
