"""What the units learn: for chosen layers of a model's backbone, the training patches (each cut at the
unit's true receptive field) that excite a sample of units most (Zeiler & Fergus 2013).

``receptive_field`` traces the geometry from the forward pass; ``units`` streams the top-k heaps;
``grids`` draws and writes them; ``networks`` says which network of each served model to look inside;
``images`` samples the public training sets; ``pipeline`` runs it. Choosing a registered version and
logging to MLflow is the lifecycle's (facegate.components.lifecycle.unit_grids)."""
