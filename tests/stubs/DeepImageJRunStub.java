// Test stand-in for deepImageJ 3.1's "DeepImageJ Run" (macro path), written from its behaviour:
// - reads model_path, input_path, output_folder, display_output with ij.Macro.getValue on Macro.getOptions(),
//   "" and "null" meaning absent; model_path must be a folder with an rdf.yaml (nicknames are not looked up here);
// - loads the model once per command (counted in the system property "fmc.stub.DeepImageJ Run.loads");
// - input_path a folder: every entry of File.listFiles() in the order it comes, each opened with IJ.openImage; an
//   entry that is not an image stops the run (deepImageJ fails with a NullPointerException there);
// - for each image writes getShortTitle() + "_restored" with IJ.saveAsTiff into output_folder: the "network"
//   is x * 2 in 32-bit, a stand-in for the inference.
import ij.*; import ij.plugin.*; import ij.process.*; import java.io.*;
public class DeepImageJRunStub implements PlugIn {
  static String arg(String options, String key) {
    String v = Macro.getValue(options, key, null);
    return (v == null || v.equals("") || v.equals("null")) ? null : v;
  }
  public void run(String unused) {
    String options = Macro.getOptions();
    if (!IJ.isMacro() || options == null) return;  // deepImageJ opens its window instead
    String model = arg(options, "model_path"), input = arg(options, "input_path");
    String out = arg(options, "output_folder"), display = arg(options, "display_output");
    String rec = "model_path=" + model + " input_path=" + input + " output_folder=" + out + " display_output=" + display;
    System.setProperty("fmc.stub.DeepImageJ Run", rec);
    System.setProperty("fmc.stub.DeepImageJ Run.options", options);
    IJ.log("stub " + rec);
    if (model == null) throw new IllegalArgumentException("DeepImageJ Run macro requires to the variable 'model_path'.");
    if (!new File(model, "rdf.yaml").isFile()) throw new IllegalArgumentException("no rdf.yaml in " + model);
    int loads = Integer.getInteger("fmc.stub.DeepImageJ Run.loads", 0) + 1;
    System.setProperty("fmc.stub.DeepImageJ Run.loads", "" + loads);
    if (out != null && !new File(out).isDirectory() && !new File(out).mkdirs())
      throw new IllegalArgumentException("The provided output folder does not exist and cannot be created: " + out);
    File in = new File(input);
    File[] files = in.isDirectory() ? in.listFiles() : new File[]{in};
    for (File f : files) {
      ImagePlus imp = IJ.openImage(f.getAbsolutePath());
      if (imp == null) throw new NullPointerException("not an image: " + f);
      ImageStack st = imp.getStack(), res = new ImageStack(imp.getWidth(), imp.getHeight());
      for (int i = 1; i <= st.getSize(); i++) {
        ImageProcessor ip = st.getProcessor(i).convertToFloat();
        ip.multiply(2);
        res.addSlice("", ip);
      }
      ImagePlus im = new ImagePlus("out", res);
      im.setDimensions(imp.getNChannels(), imp.getNSlices(), imp.getNFrames());
      im.setTitle(imp.getShortTitle() + "_restored");
      if (out != null) IJ.saveAsTiff(im, out + File.separator + im.getTitle());
    }
  }
}
