"""The LSTM controller cell (both models).

Gates are packed in one pre-activation z = [z_i | z_f | z_o | z_g] (B, 4H); the matrix product
that makes z lives in models.py, where the input part of all T steps is one product before the
time loop. Derivation: docs/derivations.md#lstm-cell.
"""
from . import kernels, levels
from .backend import array_namespace
from .ops import sigmoid


def lstm_cell_forward(z, c_prev):
    """One LSTM step from its gate pre-activations.

        i, f, o = sigma(z_i), sigma(z_f), sigma(z_o);   g = tanh(z_g)
        c[t] = f * c[t-1] + i * g
        h[t] = o * tanh(c[t])

    z (B, 4H), c_prev (B, H)  ->  h (B, H), c (B, H), cache.
    """
    xp = array_namespace(z)
    H = c_prev.shape[-1]
    ifo = sigmoid(z[:, :3 * H])
    i, f, o = ifo[:, :H], ifo[:, H:2 * H], ifo[:, 2 * H:]
    g = xp.tanh(z[:, 3 * H:])
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    h = o * tanh_c
    return h, c, (ifo, g, c_prev, tanh_c)


def lstm_cell_backward(dh, dc, cache):
    """dh, dc (B, H): gradients reaching h[t] and c[t]  ->  dz (B, 4H), dc_prev (B, H).

        dc_total = dc + dh * o * (1 - tanh(c)^2)
        di = dc_total * g,  df = dc_total * c[t-1],  do = dh * tanh(c),  dg = dc_total * i
        dz = [di i(1-i) | df f(1-f) | do o(1-o) | dg (1-g^2)],   dc_prev = dc_total * f
    """
    ifo, g, c_prev, tanh_c = cache
    xp = array_namespace(dh)
    H = dh.shape[-1]
    i, f, o = ifo[:, :H], ifo[:, H:2 * H], ifo[:, 2 * H:]
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    d_gates = xp.concat([dc_total * g, dc_total * c_prev, dh * tanh_c], axis=-1)  # [di | df | do]
    dz = xp.concat([d_gates * ifo * (1.0 - ifo), dc_total * i * (1.0 - g * g)], axis=-1)
    return dz, dc_total * f


# CuPy's elementwise level (levels.py): each of the two cells one kernel (kernels.LSTM_FORWARD,
# LSTM_BACKWARD, where the input gate is named i_: CuPy reserves i).
lstm_cell_forward = levels.elementwise_form(lstm_cell_forward, kernels.lstm_cell_forward)
lstm_cell_backward = levels.elementwise_form(lstm_cell_backward, kernels.lstm_cell_backward)
