"""One backend per modality (text, image, video, audio, 3D) and the personalization methods."""
