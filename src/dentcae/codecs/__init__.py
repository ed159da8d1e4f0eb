"""Target codecs, paired with their heads (as MMPose pairs them): pure numpy, no net. A codec turns
landmarks into what a head is trained against and decodes the head's outputs back."""
