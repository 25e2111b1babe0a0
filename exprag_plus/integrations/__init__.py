"""Recording runs from inside training frameworks.

Import the module of your framework, never this package's neighbours: each one imports its framework,
and `import exprag_plus` imports none of them.

    from exprag_plus.integrations.transformers import ExpragCallback    # Trainer(callbacks=[...])
    from exprag_plus.integrations.lightning import ExpragLogger         # Trainer(logger=...)
    from exprag_plus.integrations.keras import ExpragCallback           # model.fit(callbacks=[...])
    from exprag_plus.integrations.accelerate import ExpragTracker       # Accelerator(log_with=[...])
    from exprag_plus.integrations.optuna import ExpragCallback          # study.optimize(callbacks=[...])
"""
