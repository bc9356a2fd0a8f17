"""What people touch: the Streamlit UI and the command line."""
