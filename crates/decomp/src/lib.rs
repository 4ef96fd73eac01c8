//! Default decompositions of composite ops into port primitives, forward and analytic backward.
