"""Built-in backbones: each module defines ``BACKBONES`` (name -> factory of a :class:`~segcore.models.Backbone`)."""
