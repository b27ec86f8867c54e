def main():
    print("tlsnic")
