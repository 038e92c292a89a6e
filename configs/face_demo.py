"""Alias of `face_300w.py:demo`: a tiny HRNetV2 on synthetic faces in the 300W layout."""
from configs import face_300w
def get_config(arg=None): return face_300w.get_config(f'demo,{arg or ""}')
