// Nothing to run: this project exists to be published as the notebooks' library folder (scripts/notebooks.sh).
System.Console.WriteLine("Gati.MLNet notebook support library: publish it to samples/notebooks/lib and reference it with #r.");
