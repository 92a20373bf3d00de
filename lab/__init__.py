"""gradlab's shared core: tf.GradientTape utilities with no RL or dataset knowledge.

Modules: ``clipping`` (gradient clipping), ``transforms`` (composable gradient transforms),
``regularizers`` (penalties and regularized losses), ``higher_order`` (HVPs, Hessians, Newton
steps, curvature diagnostics, input gradients), ``ball`` (maximizing a function over an
L-infinity or L2 ball by projected steepest ascent from a random start, and the ball's
projection, random start and ascent step that the attacks share), ``activations``
(custom-gradient activations and their Keras layers), ``training`` (a compiled training
step), ``variables`` (flat vectors over variable lists), ``compile_cache`` (compiled
functions cached on the object they are about), ``checks`` (argument validation).
"""
