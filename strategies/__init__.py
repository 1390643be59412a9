"""Search strategies: plain Python over architecture samples (ask / tell), no NNI or Optuna inside."""
