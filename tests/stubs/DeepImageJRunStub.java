// Test stand-in for deepImageJ 3.1's "DeepImageJ Run": parses the snake_case keys with ImageJ 1's GenericDialog,
// records them in "fmc.stub.DeepImageJ Run", and for each input image writes <short title>_restored.tif (the
// input scaled by 2) to output_folder, as deepImageJ names its outputs.
import ij.*; import ij.gui.*; import ij.io.*; import ij.plugin.*; import java.io.*;
public class DeepImageJRunStub implements PlugIn {
  public void run(String arg) {
    GenericDialog gd = new GenericDialog("DeepImageJ Run");
    gd.addStringField("model_path", "");
    gd.addStringField("input_path", "");
    gd.addStringField("output_folder", "");
    gd.addStringField("display_output", "all");
    gd.showDialog();
    if (gd.wasCanceled()) return;
    String model = gd.getNextString(), input = gd.getNextString(), out = gd.getNextString(), display = gd.getNextString();
    String rec = "model_path=" + model + " input_path=" + input + " output_folder=" + out + " display_output=" + display;
    System.setProperty("fmc.stub.DeepImageJ Run", rec);
    IJ.log("stub " + rec);
    if (!new File(model, "rdf.yaml").isFile()) { IJ.error("DeepImageJ Run", "no rdf.yaml in " + model); return; }
    File in = new File(input);
    File[] files = in.isDirectory() ? in.listFiles() : new File[]{in};
    java.util.Arrays.sort(files);
    for (File f : files) {
      if (!f.getName().toLowerCase().endsWith(".tif")) continue;
      ImagePlus imp = IJ.openImage(f.getPath());
      IJ.run(imp, "32-bit", "");
      IJ.run(imp, "Multiply...", "value=2 stack");
      String shortTitle = f.getName().substring(0, f.getName().lastIndexOf('.'));
      IJ.saveAsTiff(imp, new File(out, shortTitle + "_restored.tif").getPath());
    }
  }
}
